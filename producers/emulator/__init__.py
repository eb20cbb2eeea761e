"""The exchange emulator (`arb emulate`): local Coinbase Exchange and Binance spot WebSocket servers.

    emulator.py  Emulator / EmulatorConfig / BackgroundEmulator: the Python API tests start in-process (port 0)
    coinbase.py  the Coinbase feed protocol (subscribe, snapshot + l2update, matches, heartbeats, errors)
    binance.py   the Binance stream protocol (combined and raw streams, SUBSCRIBE frames, pings, serverShutdown)
    market.py    the synthetic market model (pure, seeded): underlyings, venue noise and lag, windows, moves
    scenario.py  scenario files (data/scenarios/*.json)       truth.py   the ground-truth file
    faults.py    faults on demand                             control.py the HTTP control endpoint
    replay.py    recorded captures                            cli.py     `arb emulate`
"""
