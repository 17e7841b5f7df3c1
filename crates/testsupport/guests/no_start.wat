;; A valid module that is not a WASI command: it has no `_start`.
(module
  (memory (export "memory") 1)
  (func (export "run") (result i32) (i32.const 42)))
