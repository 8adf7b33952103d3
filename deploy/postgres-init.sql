-- orderflow's own database beside Temporal's, on the same PostgreSQL server
CREATE USER orderflow WITH PASSWORD 'orderflow';
CREATE DATABASE orderflow OWNER orderflow;
