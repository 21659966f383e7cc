"""HTTP routes by resource. Each route module has ``routes`` (an aiohttp RouteTableDef) and
``OPENAPI`` (the OpenAPI 3.1 path items of exactly its routes, keyed by the registered path)."""
