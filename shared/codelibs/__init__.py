"""The libraries each engine ships, as the API lists them."""
