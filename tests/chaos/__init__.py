"""The chaos suite: the commerce workload under crashes and outages (see ``driver``)."""
