// RUN: codesign opt %s --passes canonicalize | filecheck %s
// Transposes that cancel, chained reshapes and same-type casts disappear; dead ops go. A transpose that moves only
// size-1 axes (batch-first attention's (1, L, D) -> (L, 1, D)) is a reshape; one that reorders elements stays.
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
  func.func @unit_axes(%x: tensor<1x4x8xf32>) -> (tensor<4x1x8xf32>, tensor<8x4x1xf32>) {
    %t = dataflow.move "t3" %x {kind = "transpose", attrs = {onnx_op = "Transpose", nin = 1 : i64, perm = array<i64: 1, 0, 2>}} : (tensor<1x4x8xf32>) -> (tensor<4x1x8xf32>)
    %u = dataflow.move "t4" %x {kind = "transpose", attrs = {onnx_op = "Transpose", nin = 1 : i64, perm = array<i64: 2, 1, 0>}} : (tensor<1x4x8xf32>) -> (tensor<8x4x1xf32>)
    func.return %t, %u : tensor<4x1x8xf32>, tensor<8x4x1xf32>
  }
}
// CHECK:      func.func @main(%[[X:.*]]: tensor<1x4x8xf32>)
// CHECK-NOT:  dataflow.
// CHECK:      func.return %[[X]]
// CHECK:      func.func @unit_axes
// CHECK-NEXT: dataflow.move "t3" %{{.*}} {kind = "reshape"
// CHECK-NEXT: dataflow.move "t4" %{{.*}} {kind = "transpose"
