"""The seed article's example, run on spanprobe: its http.server patch and its bcc script."""
