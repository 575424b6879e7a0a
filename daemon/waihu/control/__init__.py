"""The operator's interface: the control socket's protocol, its server, and ``waihuctl``."""
