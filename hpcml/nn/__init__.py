"""Neural-network layers and training over decomposed fields."""
