"""Who may do what: projects, user permissions, and the events that fill them."""
