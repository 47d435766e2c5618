"""The demo applications, untraced, under the seed's bcc script, and traced by `spanprobe trace` / `spanprobe demo`."""
