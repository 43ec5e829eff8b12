"""The node's HTTP API and web pages (a later issue builds them here); nothing lives here yet."""
