"""Legal-hold kinds and the data categories a hold can keep: names and plain words only (no
database code, so the command line's parser can read them without the server's dependencies).
How each category is snapshotted at deletion is ``datamap.SNAPSHOTS``.

``registration``       name, e-mail address, company, registration time
``plan``               the plan's name
``consent``            the saved-monitoring consent: when, by which key or session, which nodes
``nodes``              id, name, created and enrolled times — never a token or its prefix
``webhooks``           id, name, format, enabled/disabled reason, filters, times, and only the
                       *origin* of the URL (``https://hooks.example.com``): the paths of Slack,
                       Discord, Teams and many other webhook URLs are credentials. Never a
                       signing secret or routing key
``alert_history``      the saved alert history (opted-in accounts only)
``delivery_attempts``  the saved webhook delivery attempts (opted-in accounts only)

Nothing else can be held: API keys, sessions, metric samples and rollups and the delivery queue
always go at deletion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

HOLD_KINDS: Final[Mapping[str, str]] = {
    "dispute": "an unresolved dispute",
    "credit": "an outstanding credit or debt",
    "legal": "a legal retention duty",
    "tax": "a tax retention duty",
    "audit": "an audit",
    "fraud": "fraud prevention",
}

CATEGORIES: Final[Mapping[str, str]] = {
    "registration": "name, e-mail address, company, registration time",
    "plan": "the plan",
    "consent": "the saved-monitoring consent (when, by which key or session, which nodes)",
    "nodes": "node ids, names, created and enrolled times (no tokens)",
    "webhooks": "webhook endpoints: name, format, filters, times, URL origin only (no secrets)",
    "alert_history": "the saved alert history",
    "delivery_attempts": "the saved webhook delivery attempts",
}
"""Category -> what it keeps, in plain words."""
