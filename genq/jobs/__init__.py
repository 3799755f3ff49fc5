"""Job specs, validation and the operations on job rows shared by the API, the CLI and the scheduler."""
