"""Neural building blocks shared by the students and the evaluation probe."""
