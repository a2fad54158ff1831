"""Migration plans: many guests, each one `vmshift convert` run, scheduled within limits.

plan.py reads the TOML plan into GuestSpecs (each one a `vmshift convert` command line);
state.py keeps each guest's stage and progress (SQLite here, Redis for a distributed run);
the runners (here: a pool of processes; distributed: Celery workers) start the conversions
and the views (status, the dashboard) read the state.
"""
