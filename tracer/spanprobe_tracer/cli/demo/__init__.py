"""`spanprobe demo`: command (the subcommand), server (the probed HTTP server it runs), report (the
trees and the accounting it prints), progress (its progress bar)."""
