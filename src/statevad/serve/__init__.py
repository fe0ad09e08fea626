"""``statevad serve``: several cameras scored continuously, every event kept in a database, one dashboard.

config (the service's settings) -> db (SQLite or PostgreSQL) · media (event files) · feed (frames with
arrival times and the drop policy) -> worker (one camera: engine, events, clips) -> webhook -> api (HTTP,
metrics, the dashboard in static/) -> service (the process: workers + uvicorn + clean shutdown).
"""
