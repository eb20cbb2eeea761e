"""The dashboard's sections: each has `layout(config)` and `register_callbacks(app, config, lake)`.

Callbacks stay thin: they read through `dashboard.data` and draw with `dashboard.figures`. What one refresh must
remember for the next (read cursors, latest rows) travels in the section's `dcc.Store`, never in module state.
"""
