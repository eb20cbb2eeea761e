"""Component ids, in one place so layouts, callbacks and the browser test agree."""

# controls
PAIR = "pair-picker"
RANGE = "range-picker"
TICK = "refresh-tick"
LAST_REFRESH = "last-refresh"
EMPTY_BANNER = "empty-state"

# spread chart
SPREAD_GRAPH = "spread-graph"
SPREAD_STORE = "spread-cursor"

# best bid / ask
QUOTES_TABLE = "quotes-table"
QUOTES_STORE = "quotes-state"
QUOTES_NOTE = "quotes-note"

# arbitrage windows
WINDOWS_TABLE = "windows-table"
WINDOWS_STORE = "windows-state"

# alert log
ALERTS_LIST = "alerts-list"

# health
FEED_TABLE = "feed-table"
FEED_STORE = "feed-status-state"
PIPELINE_TABLE = "pipeline-table"
