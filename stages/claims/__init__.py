"""The claims table: the findings (catalogue), their statistics (statistics) and the table (table)."""
