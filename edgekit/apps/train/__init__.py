"""Training of students (needs ``edgekit[train]``)."""
