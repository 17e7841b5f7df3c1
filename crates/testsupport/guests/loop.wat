;; Spins forever: the worker must stop it at its timeout.
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))
