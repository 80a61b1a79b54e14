"""Parameter sweeps: many Kedro sessions, locally or on Ray."""
