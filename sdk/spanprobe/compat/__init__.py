"""Other probe libraries' APIs on top of spanprobe (``from spanprobe.compat import stapsdt``)."""
