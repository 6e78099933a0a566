"""Use cases between the API and the runtime parts: sessions, terminals, BYOS."""
