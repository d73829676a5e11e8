"""The HTTPS server of spec Table 3: seven endpoints, TLS 1.3 only, JWT bearer, signed commands.

config.py reads `[https]`; app.py is the aiohttp application (middleware and routes);
views.py builds the status documents from the process image; control.py turns control POSTs
and announcements into what the node's command queue and the site coordinator take;
limits.py holds the per-source rate limit; errors.py the JSON error bodies; service.py runs
it beside the scan. `openapi.json` documents the endpoints (shipped as package data; a test
checks it against the server).
"""
