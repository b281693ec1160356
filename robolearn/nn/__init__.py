"""Neural-network building blocks shared by policy heads."""
