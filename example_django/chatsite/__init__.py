"""The example's Django project."""
