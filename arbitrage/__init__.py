"""Pure domain logic shared by the producers, the Spark jobs, the backtester and the dashboard.

Nothing here does I/O at import time or knows about Kafka, Spark or Dash.
"""
