"""The `swb` subcommands, grouped by who uses them; `broker.cli` assembles them."""
