"""WHAT gets deployed: Jinja2 templates and the one function that renders them."""
