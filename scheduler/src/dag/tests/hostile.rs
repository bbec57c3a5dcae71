//! Input meant to hurt, or simply broken: it must be refused quickly and clearly, and
//! large honest DAGs must stay fast.
