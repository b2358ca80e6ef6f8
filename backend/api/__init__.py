"""Route modules; create_app() wires this whole package to the container."""
