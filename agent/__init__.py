"""OneConnect Alert agent: VPN-node health kept in memory, alert rules, privacy gate, stream."""

import sys

__version__ = "0.1.0"

# The agent writes no file, ever — not even the interpreter's bytecode cache of its own modules
# (the systemd unit also sets PYTHONDONTWRITEBYTECODE=1, which covers this package itself).
sys.dont_write_bytecode = True
