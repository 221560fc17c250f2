fn main() -> std::process::ExitCode {
    todoapp_runtime::service::main::<todoapp_gateway::GatewayService>()
}
