"""The API's routers, one per resource: generate + jobs (user-facing), the signed job callback, the local forge pages."""
