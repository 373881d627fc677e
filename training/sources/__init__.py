"""Where training data comes from: files, MariaDB, and the RDS snapshot export."""
