"""Data side: clinical table, TCIA-layout loading, synthetic cohort, preprocessing, datasets."""
