"""The container: explicit services win, ``@provides`` factories build on first use (or all
at start-up), and what the container built is closed with the hub."""

from __future__ import annotations

import pytest

from hub import Container, HubError


class Client:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_factories_build_once_and_are_closed() -> None:
    built: list[str] = []

    def erp() -> Client:
        built.append("erp")
        return Client("erp")

    container = Container(providers={"erp": erp})
    assert "erp" in container and container.names() == ["erp"]
    first = container.resolve("erp")
    assert container.resolve("erp") is first and built == ["erp"]
    await container.aclose()
    assert first.closed
    # a closed container builds afresh on next use
    assert container.resolve("erp") is not first


async def test_explicit_services_win_and_are_not_closed() -> None:
    mine = Client("mine")
    container = Container({"erp": mine}, providers={"erp": lambda: Client("factory")})
    assert container.resolve("erp") is mine
    await container.aclose()
    assert not mine.closed


def test_build_all_surfaces_configuration_errors_at_start_up() -> None:
    def broken() -> Client:
        raise HubError("HUB_ERP_API_KEY or HUB_ERP_API_KEY_FILE is required")

    container = Container(providers={"crm": lambda: Client("crm"), "erp": broken})
    with pytest.raises(HubError, match="HUB_ERP_API_KEY"):
        container.build_all()


def test_unknown_names_list_what_is_registered() -> None:
    container = Container({"locks": object()}, providers={})
    with pytest.raises(HubError, match=r"'payments'.*registered: locks"):
        container.resolve("payments")
