// RUN: codesign opt %s --passes fuse | filecheck %s
// GELU and the residual add run in the GEMM's epilogue; the second GEMM's output has two readers, so its add stays.
builtin.module {
  func.func @main(%x: tensor<1x4x8xf32>) -> (tensor<1x4x8xf32>, tensor<1x4x8xf32>) {
    %w = dataflow.weight "w" : tensor<8x8xf32>
    %g = dataflow.gemm "fc1" %x, %w {acc_type = f32} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %a = dataflow.gelu "act" %g {approx = "exact"} : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %h = dataflow.gemm "fc2" %a, %w {acc_type = f32} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %r = dataflow.elementwise "res" %h, %x {kind = "add"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    func.return %r, %h : tensor<1x4x8xf32>, tensor<1x4x8xf32>
  }
}
// CHECK:      dataflow.gemm "fc1"
// CHECK-NEXT: dataflow.gelu "act" %{{.*}} {fused_into = "fc1"
// CHECK-NEXT: dataflow.gemm "fc2"
// CHECK-NEXT: dataflow.elementwise "res"
// CHECK-NOT:  fused_into
// CHECK:      func.return
