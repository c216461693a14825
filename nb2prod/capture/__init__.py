"""What nb2prod records from a notebook: environment, data, models."""
