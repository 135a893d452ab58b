"""Examples that the tests import and run (README, "Your own tools")."""
