"""Spikes: tests that record how a third-party library behaves, kept as evidence for a decision.

They are not tests of the hub. Each module names the decision record it backs
(``docs/decisions/*.md``) and skips, with a reason, when the library is not installed.
"""
