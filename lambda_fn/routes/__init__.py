"""The API's routers, one module-level ``APIRouter`` per resource: health, generate + jobs (user-facing), the signed job
callback, the GitHub webhook; ``deps`` is what they share (the runtime). The local forge's pages are ``aipm_local.forge.pages``."""
