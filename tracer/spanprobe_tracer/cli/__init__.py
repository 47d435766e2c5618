"""The `spanprobe` command: main (parser, COMMANDS), one module per subcommand (list, trace, doctor,
demo), and selftest (the sample provider doctor and the rendering tests use)."""
