"""Alert webhooks to developers (ARCHITECTURE.md §7): endpoints, formats, signing, delivery.

Stages, each its own module with a narrow input and output:

- ``formats``  — an alert notice → the request body of one of six formats
- ``signing``  — Standard Webhooks secrets, message ids and signature headers
- ``ssrf``     — which addresses a webhook may reach; the resolver that enforces it
- ``client``   — the one HTTP client that talks to developers' URLs (SSRF-safe, capped)
- ``retry``    — the one function that decides delivered / retry / final / disable
- ``delivery`` — per-endpoint queues, bounded concurrency, backoff, health, last attempts
- ``dispatch`` — alert events → matching endpoints (the Dispatcher's sink)
"""
