"""What every stage shares: errors, params, paths, atomic files, the stage runner."""
