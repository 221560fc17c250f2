fn main() -> std::process::ExitCode {
    todoapp_runtime::service::main::<todoapp_todo::TodoService>()
}
