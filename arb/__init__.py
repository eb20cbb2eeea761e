"""The `arb` command: configuration, the CLI and the process supervisor that ties the layers together."""
