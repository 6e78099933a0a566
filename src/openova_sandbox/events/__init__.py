"""Domain events: a bus Protocol and the in-process bus of embedded mode."""
