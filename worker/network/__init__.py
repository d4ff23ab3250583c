"""A networked sandbox's link (veth, routes) and the host firewall that fences it."""
