"""Development tools run by ``make lint``: import contracts and code measurements."""
