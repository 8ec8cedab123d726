// RUN: codesign opt %s --passes canonicalize | filecheck %s
// Transposes that cancel, chained reshapes and same-type casts disappear; dead ops go.
builtin.module {
  func.func @main(%x: tensor<1x4x8xf32>) -> tensor<1x4x8xf32> {
    %t = dataflow.move "t1" %x {kind = "transpose", attrs = {onnx_op = "Transpose", nin = 1 : i64, perm = array<i64: 0, 2, 1>}} : (tensor<1x4x8xf32>) -> (tensor<1x8x4xf32>)
    %u = dataflow.move "t2" %t {kind = "transpose", attrs = {onnx_op = "Transpose", nin = 1 : i64, perm = array<i64: 0, 2, 1>}} : (tensor<1x8x4xf32>) -> (tensor<1x4x8xf32>)
    %r = dataflow.move "r1" %u {kind = "reshape"} : (tensor<1x4x8xf32>) -> (tensor<4x8xf32>)
    %s = dataflow.move "r2" %r {kind = "reshape"} : (tensor<4x8xf32>) -> (tensor<1x4x8xf32>)
    %c = dataflow.elementwise "c" %s {kind = "cast"} : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %dead = dataflow.elementwise "dead" %x, %x {kind = "add"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    func.return %c : tensor<1x4x8xf32>
  }
}
// CHECK:      func.func @main(%[[X:.*]]: tensor<1x4x8xf32>)
// CHECK-NOT:  dataflow.
// CHECK:      func.return %[[X]]
