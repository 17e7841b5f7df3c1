;; echo: copies stdin to stdout. The smallest useful Colony function.
;;
;;   colony deploy echo examples/echo.wat
;;   colony invoke echo --data 'hello'
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; 0..8: iovec {buf, len}; 8: nread/nwritten; 1024..65536: buffer
  (func (export "_start")
    (local $n i32)
    (local $off i32)
    (loop $read
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 64512))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 1))))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.eqz (local.get $n)) (then (return)))
      ;; write all n bytes, looping on short writes
      (local.set $off (i32.const 1024))
      (loop $write
        (i32.store (i32.const 0) (local.get $off))
        (i32.store (i32.const 4) (local.get $n))
        (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (local.set $off (i32.add (local.get $off) (i32.load (i32.const 8))))
        (local.set $n (i32.sub (local.get $n) (i32.load (i32.const 8))))
        (br_if $write (local.get $n)))
      (br $read)))
)
