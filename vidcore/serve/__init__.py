"""`vidcore serve`: OpenAI's videos API over a durable job queue (the ``serve`` extra).

Modules, one idea each: `config` (what to serve, checked), `store` (the job
store interface) and `sqlite` (its default), `files` (ids and where a job's
files live), `intake` (a create request -> a checked `Request`), `worker` (one
thread per device), `server` (the running parts), `videos` and `app` (the
routes), `errors`, `limits`, `schemas`, `metrics`, and `command` (the CLI).
Only `command` and `config` import without the extra installed.
"""
