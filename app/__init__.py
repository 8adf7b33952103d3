"""The application shell: CLI, runner, HTTP app, order client, demo, embedded servers, telemetry."""
